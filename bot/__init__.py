"""The engine: app factory, config, gateway, conversation engine, store, CLI. Knows no flow."""
