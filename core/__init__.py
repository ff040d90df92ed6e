"""The ground every package stands on: settings, logging, one clock, errors, the database
engine, key files, retries and instants. It imports nothing of this project."""
