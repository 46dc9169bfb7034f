"""The load-test harness behind `loadtest/run`: processes, oha runs, feature toggles and report."""
