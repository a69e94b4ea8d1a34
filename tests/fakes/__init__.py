"""Real stand-ins for remote services, for tests: servers on 127.0.0.1 that speak the real protocol."""
