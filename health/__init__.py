"""medledger's medical application: records, inquiries, consent, audit (issue [HEALTH])."""
