"""The floors: functions that do nothing but what every webhook function must do."""

__all__: list[str] = []
