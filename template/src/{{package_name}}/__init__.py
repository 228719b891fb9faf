"""The service: the app in main.py, settings in core/, models/ and the API in api/routes/."""
