"""Data and rules: tortoise models plus the operations on them. Imports nothing from bot/ or handlers/."""
