"""The process side: the child, its restarts, signals, reload actions, reaping."""
