"""echokit_fast.backends.llm"""
