"""The DMP carry-over: the legacy extract staged, each document decided, its content copied and verified."""
