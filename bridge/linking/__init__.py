"""External-ID linking on Rentix: ``service`` links, unlinks, scans and ends adoption;
``matching`` scores hand-made portal listings against CRM listings, with ``addresses``."""
