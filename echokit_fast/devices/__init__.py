"""echokit_fast.devices"""
