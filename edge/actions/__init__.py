"""The owner's actions, one function each: the command line calls them today, the owner's web page tomorrow."""
