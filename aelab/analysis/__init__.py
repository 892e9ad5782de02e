"""Reading many run folders into tables, and drawing comparison figures."""
