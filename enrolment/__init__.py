"""Enrolment: the register, waves, eligibility, the opt-out window and the spaces."""
