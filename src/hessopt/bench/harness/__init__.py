"""The harness every suite shares: the results store, scheduling, tuning, environment and statistics."""
