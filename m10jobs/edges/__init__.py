"""Thin I/O edges: each module owns one external system; jobs call them."""
