"""The service layer: one function per owner action, for the command line now and the owner's web page next."""
