-- Health checks of the service and the API.

-- ping --
-- The cheapest statement that proves the server answers.
SELECT 1
