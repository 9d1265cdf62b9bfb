"""The ``landscape`` command line: one module per command (:mod:`landscape.cli.app` registers
them); each parses options, calls the library and prints."""
