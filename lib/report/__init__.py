"""The figures and tables every stage draws, and the offline HTML of the executed notebooks."""
