"""Render fresh SuperTuxKart frames from the real game (pystk2 + Debian's supertuxkart-data), course layout.

Modules: ``game_data`` (find the game and its assets, say what to install), ``race`` (one race in one
process: step, render, read the world state), ``frame_writer`` (course-layout info.json + view JPEGs, atomic),
``cli`` (the ``stk-vqa render`` command: plan races, run them in watched worker processes, resume).
"""
