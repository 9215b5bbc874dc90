"""What every part uses: settings, errors, logging, metrics and the one retry policy."""
