"""Command line tools: ``trt-perception <subcommand>`` (see ``main.SUBCOMMANDS``)."""
