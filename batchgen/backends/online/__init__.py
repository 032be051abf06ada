"""The online (standard and Flex) backend: caller, retries, rate and concurrency limits,
breaker, daily quota."""
