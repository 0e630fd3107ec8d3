"""The suite's shared training core: data, callbacks, schedules, distribution, runs, export."""
