"""echokit_fast.devices.echokit"""
