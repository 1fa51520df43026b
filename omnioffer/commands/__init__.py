"""The subcommands of the ``omnioffer`` command line, one module per group."""
