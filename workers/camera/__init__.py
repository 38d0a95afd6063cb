"""Camera sources and the frame publisher (`pedsearch camera`)."""
