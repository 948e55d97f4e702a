"""Reports and diagnostic figures built from saved run artifacts (never from live pipeline objects)."""
