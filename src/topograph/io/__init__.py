"""Reading images and metadata; writing standard files atomically."""
