"""Channel adapters: one small class per way a message leaves Nudge."""
