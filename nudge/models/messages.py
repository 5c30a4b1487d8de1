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


class TextMessage(_Strict):
    kind: Literal["text"] = "text"
    text: Annotated[str, Field(min_length=1, max_length=10_000)]

    _template_compiles = field_validator("text")(_compiles)


class CardMessage(_Strict):
    kind: Literal["card"] = "card"
    card: Card


class ImageMessage(_Strict):
    kind: Literal["image"] = "image"
    image: Image


AnyMessage = TextMessage | CardMessage | ImageMessage
MessageTemplate = Annotated[AnyMessage, Field(discriminator="kind")]


class _StoredMessage(BaseModel):
    message: MessageTemplate


def parse_message(data: Any) -> AnyMessage:
    """A stored message definition (JSON) back as its model."""
    return _StoredMessage(message=data).message


def render_message(
    template: TextMessage | CardMessage | ImageMessage, context: dict[str, Any]
) -> TextMessage | CardMessage | ImageMessage:
    """The same message with every template rendered against ``context``.

    The result is built without validation: rendered text is data (a ticket that says
    "see {{ x" goes out as written), never a template to compile again.
    """
    if isinstance(template, TextMessage):
        return TextMessage.model_construct(kind="text", text=render(template.text, context) or " ")
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
        return CardMessage.model_construct(kind="card", card=rendered)
    image = Image.model_construct(
        url=render(template.image.url, context), caption=render(template.image.caption, context)
    )
    return ImageMessage.model_construct(kind="image", image=image)


def plain_text(message: TextMessage | CardMessage | ImageMessage) -> str:
    """How a message reads where only text travels (history, SMS, email text part)."""
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
