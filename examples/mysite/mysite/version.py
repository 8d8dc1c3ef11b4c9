"""Release marker shown on the home page."""

VERSION = "1"
