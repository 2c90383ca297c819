"""`python -m tagger.cli`: the same as the `tagger` console script."""

from tagger.cli import main

main()
