"""Configuration reload: ``POST /admin/config/reload`` and ``SIGHUP`` read the file and the
environment again and put in force, at once, what can change while the server runs."""
