"""Camera sources (one backend per module) and the stage that turns a source into timed, masked frames."""
