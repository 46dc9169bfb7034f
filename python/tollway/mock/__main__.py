"""`python -m tollway.mock`: the mock OpenAI/Anthropic upstream."""

from tollway.mock.serve import main

main()
