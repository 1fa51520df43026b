"""The shared contract: event schemas and validation, catalog, feature definitions, stores."""
