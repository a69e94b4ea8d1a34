"""`flightdeck demo`: a living deal-desk fleet with a scripted incident, for a newcomer's first five minutes and as the
project's end-to-end test. The engine side lives here (scenario, page receiver, headless checks); the console side
in console/commands/demo.py."""
