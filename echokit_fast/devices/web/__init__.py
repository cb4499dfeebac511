"""The browser front end: the pages the server serves to a web browser, which then talks to
it as an EchoKit device over ``/ws/{id}`` (:mod:`echokit_fast.devices.echokit`).

``routes.py`` serves ``GET /`` (the talk page) and its files under ``/console/static/``;
``static/`` holds them as they are served (hand-written HTML, CSS and JavaScript modules: no
build step, nothing loaded from elsewhere).
"""
