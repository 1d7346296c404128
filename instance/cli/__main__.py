"""`python -m instance.cli`: the same as the `fieldcast` command."""

from instance.cli import main

main()
