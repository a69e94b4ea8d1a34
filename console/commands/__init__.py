"""One module per `flightdeck` command group. Each exposes `add_parser(subparsers)` and a handler."""
