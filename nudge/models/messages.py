"""Message definitions (templates) and rendered messages: text, card or image."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from nudge.templating import check_template, render


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _compiles(cls: type[BaseModel], source: str | None) -> str | None:
    """A field validator: the template compiles (the error names this very field)."""
    return None if source is None else check_template(source)


class Button(_Strict):
    label: Annotated[str, Field(min_length=1, max_length=80)]
    action: Annotated[
        str,
        Field(
            pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$",
            description="The button action to run when pressed (see `button_actions`).",
        ),
    ]
    url: Annotated[str, Field(max_length=4_000)] | None = Field(
        default=None, description="Filled in on send: the signed address that records the press."
    )

    _label_compiles = field_validator("label")(_compiles)


class Card(_Strict):
    title: Annotated[str, Field(min_length=1, max_length=500)]
    text: Annotated[str, Field(max_length=10_000)] = ""
    image_url: Annotated[str | None, Field(max_length=2_000)] = None
    buttons: Annotated[list[Button], Field(max_length=10)] = []

    _templates_compile = field_validator("title", "text", "image_url")(_compiles)


class Image(_Strict):
    url: Annotated[str, Field(min_length=1, max_length=2_000)]
    caption: Annotated[str, Field(max_length=1_000)] = ""

    _templates_compile = field_validator("url", "caption")(_compiles)


class WhatsAppTemplate(_Strict):
    """A template approved in WhatsApp Business Manager; its parameters are Nudge templates."""

    name: Annotated[str, Field(pattern=r"^[a-z0-9_]{1,512}$")] = Field(
        description="The template's name as approved by Meta."
    )
    language: Annotated[str, Field(pattern=r"^[a-z]{2,3}(_[A-Za-z]{2,4})?$")] = Field(
        description="The approved translation's code, e.g. `es` or `pt_BR`."
    )
    header: Annotated[list[Annotated[str, Field(max_length=1_000)]], Field(max_length=1)] = Field(
        default=[], description="The header's one text parameter, if it has one."
    )
    body: Annotated[list[Annotated[str, Field(max_length=1_024)]], Field(max_length=30)] = Field(
        default=[], description="The body's parameters `{{1}}`, `{{2}}`… in order."
    )
    buttons: Annotated[list[Annotated[str, Field(max_length=256)]], Field(max_length=10)] = Field(
        default=[],
        description="Payloads of the template's quick-reply buttons, by position; a press"
        " comes back as an incoming message with this payload.",
    )
    text: Annotated[str, Field(max_length=4_096)] | None = Field(
        default=None,
        description="How the message reads: kept in the history, and sent as text where a"
        " WhatsApp template cannot go (SMS, email, a fallback channel).",
    )

    @field_validator("header", "body", "buttons")
    @classmethod
    def _parameters_compile(cls, values: list[str]) -> list[str]:
        for value in values:
            check_template(value)
        return values

    _text_compiles = field_validator("text")(_compiles)


_OUTSIDE_WINDOW = Field(
    default=None,
    description="WhatsApp only: the template sent instead when the contact has not written"
    " in the last 24 hours (outside that window WhatsApp takes only templates). Without"
    " it such a send fails for good.",
)


class TextMessage(_Strict):
    kind: Literal["text"] = "text"
    text: Annotated[str, Field(min_length=1, max_length=10_000)]
    outside_window: WhatsAppTemplate | None = _OUTSIDE_WINDOW

    _template_compiles = field_validator("text")(_compiles)


class CardMessage(_Strict):
    kind: Literal["card"] = "card"
    card: Card
    outside_window: WhatsAppTemplate | None = _OUTSIDE_WINDOW


class ImageMessage(_Strict):
    kind: Literal["image"] = "image"
    image: Image
    outside_window: WhatsAppTemplate | None = _OUTSIDE_WINDOW


class WhatsAppTemplateMessage(_Strict):
    kind: Literal["whatsapp_template"] = "whatsapp_template"
    template: WhatsAppTemplate


AnyMessage = TextMessage | CardMessage | ImageMessage | WhatsAppTemplateMessage
MessageTemplate = Annotated[AnyMessage, Field(discriminator="kind")]


class _StoredMessage(BaseModel):
    message: MessageTemplate


def parse_message(data: Any) -> AnyMessage:
    """A stored message definition (JSON) back as its model."""
    return _StoredMessage(message=data).message


def render_whatsapp_template(
    template: WhatsAppTemplate, context: dict[str, Any]
) -> WhatsAppTemplate:
    """The template with its parameters rendered; an empty parameter becomes one space
    (WhatsApp refuses empty ones)."""
    return WhatsAppTemplate.model_construct(
        name=template.name,
        language=template.language,
        header=[render(value, context) or " " for value in template.header],
        body=[render(value, context) or " " for value in template.body],
        buttons=[render(value, context) for value in template.buttons],
        text=render(template.text, context) if template.text is not None else None,
    )


def render_message(template: AnyMessage, context: dict[str, Any]) -> AnyMessage:
    """The same message with every template rendered against ``context``.

    The result is built without validation: rendered text is data (a ticket that says
    "see {{ x" goes out as written), never a template to compile again.
    """
    if isinstance(template, WhatsAppTemplateMessage):
        return WhatsAppTemplateMessage.model_construct(
            kind="whatsapp_template",
            template=render_whatsapp_template(template.template, context),
        )
    outside = (
        render_whatsapp_template(template.outside_window, context)
        if template.outside_window is not None
        else None
    )
    if isinstance(template, TextMessage):
        return TextMessage.model_construct(
            kind="text", text=render(template.text, context) or " ", outside_window=outside
        )
    if isinstance(template, CardMessage):
        card = template.card
        buttons = [
            Button.model_construct(
                label=render(b.label, context) or b.action, action=b.action, url=b.url
            )
            for b in card.buttons
        ]
        rendered = Card.model_construct(
            title=render(card.title, context) or " ",
            text=render(card.text, context),
            image_url=render(card.image_url, context) if card.image_url else None,
            buttons=buttons,
        )
        return CardMessage.model_construct(kind="card", card=rendered, outside_window=outside)
    image = Image.model_construct(
        url=render(template.image.url, context), caption=render(template.image.caption, context)
    )
    return ImageMessage.model_construct(kind="image", image=image, outside_window=outside)


def plain_text(message: AnyMessage) -> str:
    """How a message reads where only text travels (history, SMS, email text part)."""
    if isinstance(message, WhatsAppTemplateMessage):
        return template_text(message.template)
    if isinstance(message, TextMessage):
        return message.text
    if isinstance(message, CardMessage):
        lines = [message.card.title]
        if message.card.text:
            lines.append(message.card.text)
        if message.card.image_url:
            lines.append(message.card.image_url)
        lines += [f"{b.label}: {b.url}" if b.url else b.label for b in message.card.buttons]
        return "\n".join(lines)
    caption = message.image.caption
    return f"{caption}\n{message.image.url}" if caption else message.image.url


def template_text(template: WhatsAppTemplate) -> str:
    """A template as the history shows it: its `text`, else its name and parameters."""
    if template.text is not None:
        return template.text
    return " · ".join([f"[{template.name}]", *template.header, *template.body])
