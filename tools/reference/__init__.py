"""Facts read in other projects' source at a recorded commit, and the scripts that extract them."""
