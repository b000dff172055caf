"""What people look at: plots and the demo's report."""
