-- Administration: statements on identifiers, which take no bind parameters. The caller
-- fills {name} placeholders with consumer.store.db.quote_ident / quote_literal.

-- create_database --
-- Create the database the service's URL names (taskledger migrate, when it is missing).
CREATE DATABASE {database}

-- set_role_password --
-- Let the application role log in with a password (taskledger migrate, owner only).
ALTER ROLE {role} LOGIN PASSWORD {password}
