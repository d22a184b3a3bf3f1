"""The compiler: dataflow IR, passes, cost model, schedules and code generation."""
