"""`python -m runner ...`: the same entry point as the `runner` console script (a thin client of the agent)."""

from runner.agent.client import client_main

if __name__ == "__main__":
    client_main()
