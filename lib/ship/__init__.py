"""What to ship (the goals on validation, the recommendation), its pictures, and the folder that ships it."""
