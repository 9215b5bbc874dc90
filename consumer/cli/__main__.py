"""``python -m consumer.cli``: the ``taskledger`` command."""

from consumer.cli import main

main()
