"""Asynchronous work (Midjourney, Suno, video): submit, poll or be called back, settle once."""
