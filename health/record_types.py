"""Which FHIR R4 resource types a record may be, which may only travel inside one, and which never.

A record's type is the one piece of content metadata on the ledger (grants are scoped by it and
the patient is shown it in words), so the list is closed and every entry is a decision. The rule
(ADR 0011, `docs/health.md`): a resource type is a **record type** if it describes one patient's
care, i.e. it is in the FHIR R4 Patient compartment (`CompartmentDefinition/patient`: the
resources that point at a patient as subject, performer or beneficiary) or is a Device
(implants), a Task or a GuidanceResponse (care workflow and decision support for a patient) or a
Bundle of them. A Bundle may carry any record type but another Bundle, plus the **context types**:
the people, places, organisations and products its entries reference. Every other R4 resource
type is **refused**, each for a reason named in `REFUSED_TYPES` (definitions and terminology that
describe no patient, other people's or an organisation's business, the ledger's own audit trail,
attachments, which are blobs).

Every resource type of the `fhir.resources` R4B models is in exactly one of the three tables (a
test holds that), so a model added by a library upgrade is refused until someone decides.
This module imports nothing: `health.types` reads it to declare the wire code list.
"""

from __future__ import annotations

from typing import Final

#: Record types and how the patient is shown them (plain words, lower case: they follow "your").
RECORD_TYPE_WORDS: Final[dict[str, str]] = {
    "Account": "billing accounts",
    "AdverseEvent": "adverse events and harm during care",
    "AllergyIntolerance": "allergies and intolerances",
    "Appointment": "appointments",
    "AppointmentResponse": "answers to appointment requests",
    "Basic": "other care notes (basic records)",
    "BodyStructure": "body sites and structures (e.g. a lesion)",
    "Bundle": "bundles of several records",
    "CarePlan": "care plans",
    "CareTeam": "care teams",
    "ChargeItem": "charges for services",
    "Claim": "insurance claims",
    "ClaimResponse": "answers to insurance claims",
    "ClinicalImpression": "clinical assessments",
    "Communication": "messages about your care",
    "CommunicationRequest": "requests to send messages about your care",
    "Composition": "clinical documents (summaries, letters)",
    "Condition": "conditions and diagnoses",
    "Consent": "consents and advance directives",
    "Coverage": "insurance coverage",
    "CoverageEligibilityRequest": "insurance eligibility requests",
    "CoverageEligibilityResponse": "insurance eligibility answers",
    "DetectedIssue": "detected clinical issues (e.g. drug interactions)",
    "Device": "devices and implants",
    "DeviceRequest": "device orders",
    "DeviceUseStatement": "devices you use",
    "DiagnosticReport": "diagnostic reports (lab, imaging)",
    "DocumentManifest": "document sets",
    "DocumentReference": "documents",
    "Encounter": "visits and hospital stays",
    "EnrollmentRequest": "insurance enrolment requests",
    "EnrollmentResponse": "insurance enrolment answers",
    "EpisodeOfCare": "episodes of care",
    "ExplanationOfBenefit": "explanations of insurance benefits",
    "FamilyMemberHistory": "family medical history",
    "Flag": "alerts and warnings on your file",
    "Goal": "care goals",
    "GuidanceResponse": "clinical decision support results",
    "ImagingStudy": "imaging studies (scans, X-rays)",
    "Immunization": "vaccinations",
    "ImmunizationEvaluation": "vaccination evaluations",
    "ImmunizationRecommendation": "vaccination recommendations",
    "Invoice": "invoices",
    "List": "lists (e.g. problem or medication lists)",
    "MeasureReport": "quality measure reports about you",
    "Media": "photos, recordings and scans",
    "MedicationAdministration": "medications given to you",
    "MedicationDispense": "medications dispensed",
    "MedicationRequest": "prescriptions",
    "MedicationStatement": "medications you take",
    "MolecularSequence": "genetic sequences",
    "NutritionOrder": "diet and nutrition orders",
    "Observation": "measurements and test results",
    "Patient": "personal and contact details",
    "Procedure": "procedures and operations",
    "Provenance": "records of who wrote or changed what",
    "QuestionnaireResponse": "answered questionnaires and forms",
    "RelatedPerson": "relatives and contacts",
    "RequestGroup": "grouped orders",
    "ResearchSubject": "research study participation",
    "RiskAssessment": "risk assessments",
    "ServiceRequest": "orders and referrals",
    "Specimen": "specimens (samples)",
    "SupplyDelivery": "supplies delivered",
    "SupplyRequest": "supply orders",
    "Task": "care tasks",
    "VisionPrescription": "glasses and contact lens prescriptions",
}

#: Resource types that travel only inside a record (a Bundle entry, or `contained`): who and what
#: the record references. They are nobody's care by themselves, so they are no record type.
CONTEXT_TYPES: Final = frozenset(
    {
        "Endpoint",
        "HealthcareService",
        "Location",
        "Medication",
        "Organization",
        "Practitioner",
        "PractitionerRole",
        "Substance",
    }
)

_DEFINITION = "a definition or knowledge artifact: it describes no patient"
_TERMINOLOGY = "terminology: code systems and value sets describe no patient"
_CONFORMANCE = "conformance and testing of FHIR systems: it describes no patient"
_PRODUCT = "a product or catalogue entry: it describes no patient (reference it as context)"
_MESSAGING = "transport and operation plumbing, not a record (the ledger is the transport)"
_ORGANISATION = "an organisation's business, not one patient's care"
_IDENTITY = "identity across patients: it names other people (the patient id is the ledger's link)"

#: Every other R4 resource type, with why it is refused (shown in `docs/health.md`).
REFUSED_TYPES: Final[dict[str, str]] = {
    "ActivityDefinition": _DEFINITION,
    "AdministrableProductDefinition": _PRODUCT,
    "AuditEvent": "the ledger keeps the audit trail itself (every inquiry, decision and read)",
    "Binary": "raw bytes: attachments are stored as encrypted blobs (ADR 0013), not as records",
    "BiologicallyDerivedProduct": _PRODUCT,
    "CapabilityStatement": _CONFORMANCE,
    "CatalogEntry": _PRODUCT,
    "ChargeItemDefinition": _DEFINITION,
    "Citation": _DEFINITION,
    "ClinicalUseDefinition": _DEFINITION,
    "CodeSystem": _TERMINOLOGY,
    "CompartmentDefinition": _CONFORMANCE,
    "ConceptMap": _TERMINOLOGY,
    "Contract": "a legal agreement between parties (a patient's consent is a Consent record)",
    "DeviceDefinition": _PRODUCT,
    "DeviceMetric": _PRODUCT,
    "EventDefinition": _DEFINITION,
    "Evidence": _DEFINITION,
    "EvidenceReport": _DEFINITION,
    "EvidenceVariable": _DEFINITION,
    "ExampleScenario": _CONFORMANCE,
    "GraphDefinition": _CONFORMANCE,
    "Group": "a set of people: it names other patients",
    "ImplementationGuide": _CONFORMANCE,
    "Ingredient": _PRODUCT,
    "InsurancePlan": _PRODUCT,
    "Library": _DEFINITION,
    "Linkage": _IDENTITY,
    "ManufacturedItemDefinition": _PRODUCT,
    "Measure": _DEFINITION,
    "MedicationKnowledge": _PRODUCT,
    "MedicinalProductDefinition": _PRODUCT,
    "MessageDefinition": _CONFORMANCE,
    "MessageHeader": _MESSAGING,
    "NamingSystem": _TERMINOLOGY,
    "NutritionProduct": _PRODUCT,
    "ObservationDefinition": _DEFINITION,
    "OperationDefinition": _CONFORMANCE,
    "OperationOutcome": _MESSAGING,
    "OrganizationAffiliation": _ORGANISATION,
    "PackagedProductDefinition": _PRODUCT,
    "Parameters": _MESSAGING,
    "PaymentNotice": _ORGANISATION,
    "PaymentReconciliation": _ORGANISATION,
    "Person": _IDENTITY,
    "PlanDefinition": _DEFINITION,
    "Questionnaire": _DEFINITION,
    "RegulatedAuthorization": _PRODUCT,
    "ResearchDefinition": _DEFINITION,
    "ResearchElementDefinition": _DEFINITION,
    "ResearchStudy": _ORGANISATION,
    "Schedule": _ORGANISATION,
    "SearchParameter": _CONFORMANCE,
    "Slot": _ORGANISATION,
    "SpecimenDefinition": _DEFINITION,
    "StructureDefinition": _CONFORMANCE,
    "StructureMap": _CONFORMANCE,
    "Subscription": _MESSAGING,
    "SubscriptionStatus": _MESSAGING,
    "SubscriptionTopic": _MESSAGING,
    "SubstanceDefinition": _PRODUCT,
    "TerminologyCapabilities": _CONFORMANCE,
    "TestReport": _CONFORMANCE,
    "TestScript": _CONFORMANCE,
    "ValueSet": _TERMINOLOGY,
    "VerificationResult": _ORGANISATION,
}

#: Longest resource type name (the record binding length-prefixes it in one byte).
RECORD_TYPE_LENGTH_MAX: Final = max(len(name) for name in RECORD_TYPE_WORDS)
