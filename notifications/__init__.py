"""Notifications: templates, email sending, AFNOR letters and delivery feedback."""
