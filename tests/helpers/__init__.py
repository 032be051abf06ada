"""What more than one test module needs: paths, fakes, job and output helpers, strategies.

A test module imports from here (or uses a conftest fixture), never from another test module;
tests/test_suite_shape.py keeps it so.
"""
