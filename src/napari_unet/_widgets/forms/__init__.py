"""Qt parts of the widgets' forms: choosers, folded sections, the curve, shortcuts, dock lifetime."""
