"""echokit_fast.turn"""
