from .scheduling_hjb_euler import HJBEulerScheduler

__all__ = ["HJBEulerScheduler"]
